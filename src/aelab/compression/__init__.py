"""Compression: the learned codec's byte stream, classical codecs, and rate-distortion measured in real bytes."""

from ..curves import LEARNED, TARGETS, at_bytes, pareto_front
from .classical import (AVIF, CODECS, DEFAULT_METHODS, JPEG, PNG, XZ, AVIFPayload, ImageCodec, JPEGScan, PCACodec,
                        PCALaplace, PillowCodec, WebP, register_codec)
from .containers import avif_payload, isobmff_boxes, jpeg_scan_data, jpeg_scan_span, jpeg_segments
from .rd import learned_points, measure_codec, rate_distortion, rd, to_uint8
from .files import compress_files, decompress_file
from .refine import refine_latents
from .stream import compress, decompress, latents, load_codec, model_id, rd_point, reconstruct

__all__ = [
    "compress", "decompress", "compress_files", "decompress_file", "load_codec", "rd_point", "reconstruct",
    "latents", "model_id", "refine_latents",
    "CODECS", "DEFAULT_METHODS", "register_codec", "ImageCodec", "PillowCodec", "JPEG", "JPEGScan", "WebP", "AVIF",
    "AVIFPayload", "PNG", "XZ", "PCACodec", "PCALaplace",
    "jpeg_segments", "jpeg_scan_span", "jpeg_scan_data", "isobmff_boxes", "avif_payload",
    "TARGETS", "LEARNED", "pareto_front", "at_bytes",
    "to_uint8", "measure_codec", "learned_points", "rate_distortion", "rd",
]
