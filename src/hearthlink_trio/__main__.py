from hearthlink_trio.cli import main

raise SystemExit(main())
