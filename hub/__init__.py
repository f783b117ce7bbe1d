"""livehub: a real-time hub for live user sessions."""

__version__ = "0.1.0"
