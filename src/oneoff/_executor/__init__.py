"""Where a one-off process runs: local subprocess today; sandbox and Kubernetes Job next."""
