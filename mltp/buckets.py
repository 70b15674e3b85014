"""Creating our buckets safely and checking that they are ours, reachable and locked down."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class BucketReport:
    bucket: str
    exists: bool
    owned: bool = False
    encryption: str | None = None
    public_access_blocked: bool = False

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
    return BucketReport(bucket, True, True, encryption, blocked)


def ensure_bucket(clients: ClientFactory, bucket: str, region: str, account: str) -> str:
    """Create `bucket` encrypted and private if missing; refuse one that another account owns.

    An existing bucket of ours keeps its own encryption (it may use KMS); we only add default
    encryption and the public access block where they are missing. Returns "created" or "existing".
    """
    s3 = clients("s3")
    report = inspect_bucket(clients, bucket, account)
    if report.exists and not report.owned:
        raise _not_ours(bucket)
    outcome = "existing"
    if not report.exists:
        _create(s3, bucket, region)
        outcome = "created"
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
