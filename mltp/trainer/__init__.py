"""What runs on the compute (EC2 instance, Lambda function, local process). Imports no Prefect."""
