"""Image pretext methods, one file each (registered on first use by ``ssrl.representations.get``)."""
