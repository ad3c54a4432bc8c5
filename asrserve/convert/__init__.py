"""Model converters: foreign checkpoints into the ONNX layouts asrserve serves
(a toolchain beside the runtime, which never imports it)."""
