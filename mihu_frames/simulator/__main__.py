"""``python -m mihu_frames.simulator``: serve until interrupted (see ``cli.main``)."""

from mihu_frames.simulator.cli import main

raise SystemExit(main())
