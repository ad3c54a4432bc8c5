"""Post-training quantization: ``asrserve quantize``.

Calibration (``calibration``) streams real audio through the fp32 model
exactly as serving does (warm encoder caches, greedy-decoded joiner
inputs) and keeps the feeds each graph saw; the ONNX modes (``onnx_modes``,
``smoothquant``) and the ncnn int8 writer (``ncnn_int8``) consume them; the
report (``report``) compares the result with fp32.
"""
