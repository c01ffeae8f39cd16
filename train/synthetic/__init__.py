"""The synthetic world: a rigged SMPL-topology body, scenes with exact ground truth, crop shards and detection datasets."""
