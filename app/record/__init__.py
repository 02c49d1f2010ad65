"""Call recordings: the file format, the live recorder, and export to WAV."""
