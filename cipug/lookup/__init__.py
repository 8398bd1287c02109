"""Looking tags up: references, the cache, skopeo and the registry resolver."""
