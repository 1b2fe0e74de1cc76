"""Training on weakly shards: streaming loader, 1/k multi-label softmax loss, models, loop."""
