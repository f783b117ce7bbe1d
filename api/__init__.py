"""The REST API of livehub: the Assist API, stored-session search and operations."""
