"""Clients of the asrserve WebSocket server, and live microphone transcription.

* :mod:`asrserve.clients.sources`: audio sources (files, microphone)
* :mod:`asrserve.clients.ws_client`: the JSON-dialect WebSocket client
* :mod:`asrserve.clients.mic`: live transcription, local or through a server
* :mod:`asrserve.clients.commands`: the ``client`` and ``mic`` subcommands

Nothing is imported here so that building the CLI parser stays cheap.
"""
