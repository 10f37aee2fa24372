"""What the tests run as a compromised service (issue 26), shared by the template and end-to-end tests."""

# Python source. Run as the attacker with the arguments DIRECTORY TARGET STOP_FILE: until STOP_FILE exists
# (at most 120 s), every new dot-name in DIRECTORY (a temporary file root is about to write and chown by
# name) becomes a symbolic link to TARGET. Prints "swapped NAME" for each one it swapped.
LINK_RACER = r"""
import os, sys, time
directory, target, stop = sys.argv[1:4]
end = time.time() + 120
while time.time() < end and not os.path.exists(stop):
    try:
        names = os.listdir(directory)
    except OSError:
        time.sleep(0.01)
        continue
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") and not os.path.islink(path):
            try:
                os.unlink(path)
                os.symlink(target, path)
                print("swapped", name, flush=True)
            except OSError:
                pass
"""
