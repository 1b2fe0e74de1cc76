"""The data pipeline: manifests, images, perceptual hashing, eval dedup, weights, shards, Ray."""
