"""What the fork server of `check_process` imports before it forks any child: the check
modules, and Pillow's plugins registered once (``Image.init``: about 60 ms that each child
would otherwise spend). Imported by that server only, never by the API itself."""

from PIL import Image

from bulwark.api.uploads import check_process, contents

__all__ = ["check_process", "contents"]

Image.init()
