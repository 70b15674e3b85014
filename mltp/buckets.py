"""Creating our buckets safely and checking that they are ours, reachable and locked down."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fnmatch import fnmatchcase

from botocore.exceptions import ClientError

from mltp.aws import DENIED_CODES, NOT_FOUND_CODES, ClientFactory, error_code
from mltp.errors import BucketError

_PUBLIC_ACCESS_BLOCKED = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
# A safety net under our own cleanup: uploads a crashed process never finished, and staged copies it
# never removed, disappear after a day instead of costing money forever.
_LIFECYCLE = {
    "Rules": [
        {
            "ID": "mltp-abort-incomplete-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
        {
            "ID": "mltp-expire-staging",
            "Status": "Enabled",
            "Filter": {"Prefix": "staging/"},
            "Expiration": {"Days": 1},
        },
    ]
}
_DEFAULT_ENCRYPTION = {
    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]
}
# The same statement, by the same Sid, as the bucket policies of deployments/aws/mltp.cfn.yaml.
TLS_ONLY_SID = "DenyInsecureTransport"
_TLS_ONLY_FIX = (
    f"add to its bucket policy a statement denying s3:* on the bucket and its objects when "
    f"aws:SecureTransport is false (Sid {TLS_ONLY_SID}, as in deployments/aws/mltp.cfn.yaml)"
)


def tls_only_policy(bucket: str, partition: str = "aws") -> dict:
    """The bucket policy we give a bucket we create: every request without TLS is denied."""
    arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": TLS_ONLY_SID,
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


@dataclass(frozen=True)
class BucketReport:
    bucket: str
    exists: bool
    owned: bool = False
    encryption: str | None = None
    public_access_blocked: bool = False
    policy: str = "missing"  # tls-only | other (the owner's, without the TLS deny) | missing | unreadable
    # An endpoint without TLS (a local S3 stand-in such as the sandbox's moto): a TLS-only policy would
    # refuse our own requests there, so it is neither applied nor required.
    plain_http: bool = False

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}"

    def problem(self) -> tuple[str, str] | None:
        """The first thing wrong with the bucket as (what, fix), or None when it is fine."""
        if not self.exists:
            return f"{self.s3_uri} does not exist", "run `mltp blocks init` to create it"
        if not self.owned:
            return (
                f"{self.s3_uri} belongs to another AWS account or denies us access",
                "choose a bucket name of your own in ML_DATA_BUCKET / ML_MODELS_BUCKET",
            )
        if self.encryption is None:
            return f"{self.s3_uri} has no default encryption", "run `mltp blocks init` to enable SSE"
        if not self.public_access_blocked:
            return (
                f"{self.s3_uri} does not block public access",
                "run `mltp blocks init` to turn on the public access block",
            )
        return None if self.plain_http else self._tls_problem()

    def _tls_problem(self) -> tuple[str, str] | None:
        if self.policy == "unreadable":
            return (
                f"cannot read the bucket policy of {self.s3_uri} (access denied)",
                "allow s3:GetBucketPolicy on the bucket (deployments/aws/iam-policy.json)",
            )
        if self.policy == "other":
            return f"the bucket policy of {self.s3_uri} does not deny requests without TLS", _TLS_ONLY_FIX
        if self.policy == "missing":
            return f"{self.s3_uri} has no bucket policy denying requests without TLS", _TLS_ONLY_FIX
        return None


def _owned_by_caller(s3, bucket: str, account: str) -> bool:
    # ExpectedBucketOwner is how AWS answers "is it ours" (403 otherwise). ListBuckets answers the same
    # question and is also what moto implements, so a listed bucket is ours; an unlisted one is not.
    try:
        listed = s3.list_buckets(Prefix=bucket).get("Buckets", [])
    except ClientError as error:
        if error_code(error) != "AccessDenied":
            raise
    else:
        return any(entry["Name"] == bucket for entry in listed)
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as error:
        if error_code(error) in DENIED_CODES:
            return False
        raise
    return True


def _exists(s3, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error_code(error) in NOT_FOUND_CODES:
            return False
        if error_code(error) in DENIED_CODES:
            return True
        raise
    return True


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _denies_plain_http(statement: dict, arn: str) -> bool:
    """Does this statement deny every request to `arn` that comes without TLS?"""
    # Condition keys are case-insensitive; the value may be a string, a boolean or a list of one.
    bool_conditions = {
        key.lower(): value for key, value in statement.get("Condition", {}).get("Bool", {}).items()
    }
    secure = [str(value).lower() for value in _listed(bool_conditions.get("aws:securetransport", []))]
    return (
        statement.get("Effect") == "Deny"
        and statement.get("Principal") in ("*", {"AWS": "*"})
        and any(action in ("s3:*", "*") for action in _listed(statement.get("Action", [])))
        and secure == ["false"]
        and any(fnmatchcase(arn, pattern) for pattern in _listed(statement.get("Resource", [])))
    )


def tls_policy_state(policy: dict, bucket_arn: str) -> str:
    """ "tls-only" when the bucket policy denies every request without TLS to the bucket and its
    objects (by one statement, as we write it, or by one each), else "other"."""
    statements = _listed(policy.get("Statement", []))
    targets = (bucket_arn, f"{bucket_arn}/*")
    denied = all(any(_denies_plain_http(statement, target) for statement in statements) for target in targets)
    return "tls-only" if denied else "other"


def _policy_state(s3, bucket: str, account: str) -> str:
    try:
        document = s3.get_bucket_policy(Bucket=bucket, ExpectedBucketOwner=account)["Policy"]
    except ClientError as error:
        if error_code(error) == "NoSuchBucketPolicy":
            return "missing"
        if error_code(error) in DENIED_CODES:
            return "unreadable"
        raise
    return tls_policy_state(json.loads(document), f"arn:{s3.meta.partition}:s3:::{bucket}")


def _plain_http(s3) -> bool:
    return s3.meta.endpoint_url.startswith("http://")


def inspect_bucket(clients: ClientFactory, bucket: str, account: str) -> BucketReport:
    s3 = clients("s3")
    if not _exists(s3, bucket):
        return BucketReport(bucket, exists=False)
    if not _owned_by_caller(s3, bucket, account):
        return BucketReport(bucket, exists=True, owned=False)
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket, ExpectedBucketOwner=account)[
            "ServerSideEncryptionConfiguration"
        ]["Rules"]
        encryption = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] if rules else None
    except ClientError as error:
        if error_code(error) != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        encryption = None
    try:
        config = s3.get_public_access_block(Bucket=bucket, ExpectedBucketOwner=account)[
            "PublicAccessBlockConfiguration"
        ]
        blocked = all(config.get(key) for key in _PUBLIC_ACCESS_BLOCKED)
    except ClientError as error:
        if error_code(error) != "NoSuchPublicAccessBlockConfiguration":
            raise
        blocked = False
    policy = _policy_state(s3, bucket, account)
    return BucketReport(bucket, True, True, encryption, blocked, policy, _plain_http(s3))


def ensure_bucket(clients: ClientFactory, bucket: str, region: str, account: str) -> str:
    """Create `bucket` encrypted, private and TLS-only if missing; refuse one that another account owns.

    An existing bucket of ours keeps its own encryption (it may use KMS); we only add default
    encryption and the public access block where they are missing. Its bucket policy is the owner's:
    `inspect_bucket` reports one that lets requests without TLS through, we never replace it. Over an
    endpoint without TLS no bucket gets the TLS-only policy: it would refuse our own requests. Returns
    "created" or "existing".
    """
    s3 = clients("s3")
    report = inspect_bucket(clients, bucket, account)
    if report.exists and not report.owned:
        raise _not_ours(bucket)
    outcome = "existing"
    if not report.exists:
        _create(s3, bucket, region)
        outcome = "created"
        if not _plain_http(s3):
            policy = tls_only_policy(bucket, s3.meta.partition)
            s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy), ExpectedBucketOwner=account)
    if report.encryption is None:
        s3.put_bucket_encryption(
            Bucket=bucket, ServerSideEncryptionConfiguration=_DEFAULT_ENCRYPTION, ExpectedBucketOwner=account
        )
    if not _has_lifecycle(s3, bucket, account):  # a lifecycle of the owner's own is left as it is
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration=_LIFECYCLE, ExpectedBucketOwner=account
        )
    if not report.public_access_blocked:
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCKED, ExpectedBucketOwner=account
        )
    return outcome


def _has_lifecycle(s3, bucket: str, account: str) -> bool:
    try:
        s3.get_bucket_lifecycle_configuration(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as error:
        if error_code(error) != "NoSuchLifecycleConfiguration":
            raise
        return False
    return True


def ensure_buckets(clients: ClientFactory, buckets: list[str], region: str, account: str) -> dict[str, str]:
    """`ensure_bucket` for each, after checking all first so a foreign name creates nothing."""
    for bucket in buckets:
        report = inspect_bucket(clients, bucket, account)
        if report.exists and not report.owned:
            raise _not_ours(bucket)
    return {bucket: ensure_bucket(clients, bucket, region, account) for bucket in dict.fromkeys(buckets)}


def _create(s3, bucket: str, region: str) -> None:
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=bucket, **kwargs)
    except ClientError as error:
        if error_code(error) == "BucketAlreadyExists":  # someone else took the name between our checks
            raise _not_ours(bucket) from error
        if error_code(error) != "BucketAlreadyOwnedByYou":
            raise


def _not_ours(bucket: str) -> BucketError:
    return BucketError(
        f"bucket s3://{bucket} already exists and belongs to another AWS account: "
        "set ML_DATA_BUCKET / ML_MODELS_BUCKET to a name of your own",
        s3_uri=f"s3://{bucket}",
    )
