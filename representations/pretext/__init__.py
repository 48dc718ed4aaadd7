"""The seed's pretext methods (image-based under ``image/``), as pretraining modules for the
suite's encoders: each is a :class:`~ssrl.representations.Representation` whose head is thrown
away after pretraining, leaving an encoder of the same backbone family as the control methods.
Each module registers its method when imported; the registry imports it on first use."""
