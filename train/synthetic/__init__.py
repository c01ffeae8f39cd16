"""The synthetic world: people on the SMPL topology with exact ground truth, one module per job.

- `body`: the template, its rig, the posable SMPL-topology body and its joint limits
- `poses`: the pose prior (standing, walking, reaching, sitting), gait styles, shapes, smooth motion
- `appearance`: procedural backgrounds and clothing colours
- `camera`: where a scene's camera stands, the camera of a crop, projection
- `scene`: a scene's plan, the people posed in it, what is visible, rendering its frames
- `clip`: a video with its ground-truth npz (`mega-rt synth OUT.mp4`)
- `crops`: the crop-shard training set and its layout (`mega-rt synth --dataset`)
- `detection`: person-detection images in the YOLO layout (`mega-rt synth --detection-dataset`)
- `contact_sheet`: a picture of the poses and a scene, to look at the ground truth
"""
