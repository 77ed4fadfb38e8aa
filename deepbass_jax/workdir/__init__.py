"""The run folder: `guard` (one run at a time, room on the disk, fault points for the kill tests), `checkpoint`
(atomic files, JSON lines, checksummed checkpoints), `runfolder` (where each file goes: the pinned config, the
metrics, the checkpoint of all seeds, labels.csv, the summary). It draws no figure itself and knows no oracle."""
