"""llama.cpp runtime: GGUF inspection, devices, engine and its worker process.

Imports neither Qt nor ``app``; everything here can run in a child process alone.
"""
