"""The application layer: the `weakly` command, the demo and its report, synthetic data, test
fixtures and the CLI reference. It sits above `pipeline`, `train` and `wordnet_tools` and is
imported by none of them."""
