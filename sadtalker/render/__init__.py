"""Face renderer (SadTalker §3.3): coefficients → MappingNet → 3-D keypoints → face-vid2vid generator →
frames.

Networks, one per file, attribute names = official checkpoint keys: :mod:`.mapping`,
:mod:`.keypoint_detector`, :mod:`.generator` (with :mod:`.dense_motion`, :mod:`.spade`, :mod:`.blocks`),
:mod:`.he_estimator` (legacy layout only). Pure functions: :mod:`.keypoints` (keypoint transformation),
:mod:`.batching` (renderer inputs, windows, free-view angles), :mod:`.postprocess` (uint8 frames, output
size). Builder: :mod:`.build`. Engine: :class:`.animate.FaceAnimator`.
"""
