from fedgpu.cli.main import main

raise SystemExit(main())
