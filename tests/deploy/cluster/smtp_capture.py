"""An SMTP server that keeps every message it accepts as `<dir>/<n>.eml` (what a mail catcher does),
for the production-style cluster run: the platform's `smtp` email backend delivers to it over the
run's network. Runs in the Python stand-in image with the standard library only (smtpd, Python 3.11).

    python3 smtp_capture.py HOST PORT DIR
"""

import asyncore
import os
import sys
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
import smtpd  # noqa: E402  (deprecated, still in 3.11: the image has no aiosmtpd)


class Capture(smtpd.SMTPServer):
    def __init__(self, address, directory):
        super().__init__(address, None, decode_data=False)
        self.directory = directory
        self.count = 0

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        self.count += 1
        path = os.path.join(self.directory, f"{self.count:05d}.eml")
        with open(path + ".part", "wb") as out:
            out.write(data)
        os.replace(path + ".part", path)  # readers never see half a message
        print(f"captured {path} from {mailfrom} to {len(rcpttos)} recipient(s)", flush=True)


if __name__ == "__main__":
    host, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(directory, exist_ok=True)
    Capture((host, port), directory)
    print(f"listening on {host}:{port}", flush=True)
    asyncore.loop()
