"""Source photo: loading (:mod:`.image`), face detection with 68 landmarks (:mod:`.landmarks`) and the crop
modes producing the S×S source image (:mod:`.crop`). Official counterparts: the cropping part of
``CropAndExtract.generate`` (src/utils/preprocess.py) and ``Preprocesser`` (src/utils/croper.py)."""

from sadtalker.face.crop import (
    CropRecord,
    FaceBox,
    apply_crop,
    crop_source,
    face_box,
    landmarks_to_source,
    plan_crop,
    source_image,
    source_to_original,
)
from sadtalker.face.image import LoadedImage, decode_image, load_image
from sadtalker.face.landmarks import (
    DetectedFace,
    DlibBackend,
    FaceAlignmentBackend,
    FaceLandmarker,
    FaceSelection,
    find_face,
    make_landmarker,
)

__all__ = [
    "CropRecord",
    "DetectedFace",
    "DlibBackend",
    "FaceAlignmentBackend",
    "FaceBox",
    "FaceLandmarker",
    "FaceSelection",
    "LoadedImage",
    "apply_crop",
    "crop_source",
    "decode_image",
    "face_box",
    "find_face",
    "landmarks_to_source",
    "load_image",
    "make_landmarker",
    "plan_crop",
    "source_image",
    "source_to_original",
]
