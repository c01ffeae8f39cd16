"""Datasets for the three training stages.

Mesh sources (tokenizer, pretrain): `meshes.py` — synthetic bodies and AMASS/BEDLAM animations.
Image sources (hmr): `crops.py` (synthetic crop shards), `hmr_npz.py` (CLIFF/BEDLAM/VQ-HPS annotation
files), made into model inputs by `augment.py`. `mixing.py` decides, from the seed and the sample
number alone, which sample of which source comes next, so a resumed run reads exactly what an
uninterrupted one would have read.
"""
