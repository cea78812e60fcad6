"""Face renderer (SadTalker §3.3): coefficients → MappingNet → 3-D keypoints → face-vid2vid generator →
frames.

Networks, one per file, attribute names = official checkpoint keys: :mod:`.mapping`,
:mod:`.keypoint_detector`, :mod:`.generator` (with :mod:`.dense_motion`, :mod:`.spade`, :mod:`.blocks`),
:mod:`.he_estimator` (legacy layout only). Pure functions: :mod:`.keypoint_transform` (head pose →
rotation, keypoint transformation), :mod:`.windows` (target coefficients, 27-frame windows, free-view
angles). Builder: :mod:`sadtalker.networks`. Engine: :class:`.animate.FaceAnimator`, which turns a clip's
records (:mod:`sadtalker.records`) into uint8 frames.
"""
