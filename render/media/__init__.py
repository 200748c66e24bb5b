"""Media I/O through the ffmpeg binary that imageio-ffmpeg ships."""
