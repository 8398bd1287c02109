"""The external programs cipug runs: the process runner, the compose tool and snapper."""
