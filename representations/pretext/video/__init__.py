"""Video pretext methods, one file each (registered on first use by ``ssrl.representations.get``),
judged by the simulator's ground-truth masks (:mod:`.judge`)."""
