"""`mega-rt app`: a local web app (Gradio) on the Python API and the pipeline's own stages and sinks.

config.py     frozen settings of the app and of one run, with their limits
workspace.py  the app's one temporary folder (uploads, job outputs), removed at exit
uploads.py    the checks an upload passes before anything runs on it
jobs.py       one uploaded video through realtime.pipeline: overlay mp4, results npz/jsonl, summary
meshes.py     one frame's meshes as a GLB (trimesh), the per-track table, a frame of the overlay
live.py       webcam frames through the model and the overlay renderer, with the live frame rate
ui.py         the Gradio page and its launch
"""
