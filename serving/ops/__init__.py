"""Operating a site's state: back up and restore `CLINASSIST_HOME`, and check it before a start."""
