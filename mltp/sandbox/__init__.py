"""The local sandbox: moto server + Prefect server on loopback, state under `.mltp/`."""
