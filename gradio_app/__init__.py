"""RestoreKit's Gradio app: a thin adapter onto the engine (``restorekit app``)."""
