"""TFDS builders for effcomp's datasets; read them through `effcomp.data.sources`."""
