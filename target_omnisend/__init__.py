"""target-omnisend: a Singer target that loads customer segments into Omnisend."""
