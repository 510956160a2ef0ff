"""The Kubernetes side: the Secret store (:mod:`.store`) and the project
cache in front of it (:mod:`.projects`).  Nothing here knows registries."""
