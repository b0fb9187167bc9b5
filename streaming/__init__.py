"""Real-time speech-to-text over websockets, in the hosted Whisper endpoint's schema."""

__version__ = "0.1.0"
