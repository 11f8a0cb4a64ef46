"""``python -m mihu_frames`` runs the command line."""

from mihu_frames.cli import main

raise SystemExit(main())
