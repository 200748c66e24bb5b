"""The built-in synthetic talking subject (astronaut photo + eSpeak NG speech + expression rig)."""
