"""py-faster-rcnn's ``lib/rpn`` package (anchors, proposal and target layers), re-implemented for
the fork-corpus tests."""
