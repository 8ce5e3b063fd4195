"""py-faster-rcnn's ``lib/fast_rcnn`` package (config and box helpers), re-implemented for the
fork-corpus tests."""
