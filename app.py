"""Start the ftchat browser app.

    python app.py [--host 127.0.0.1] [--port 7860] [--workspace DIR] [--auth USER:PASS | --users [FILE]]
                  [--feedback-db postgresql://user@host:port/db]
"""
import sys

from ftchat.ui.app import main

if __name__ == "__main__":
    sys.exit(main())
