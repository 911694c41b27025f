from openfal.cli import main

main()
