"""Inference: `Synthesizer` (frames from a checkpoint or an engine, `synthesis`), the driving
inputs (`driving`: speech or a video to MFCC windows or frames), the face to animate
(`face_input`: a photo or video, detected and aligned) and the command (`generate`:
`fastdavs-generate`). Reads checkpoints through `fastdavs.io` and engines through
`fastdavs.engines`."""
