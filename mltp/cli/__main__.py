from mltp.cli.app import main

main()
