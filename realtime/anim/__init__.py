"""Animation files from a results file (and its SMPL fit): glTF binary (glb.py), BVH (bvh.py), PC2 point
cache + base OBJ (pc2.py). The world frame of every file is world.py's (Y up, +Z toward the viewer)."""
