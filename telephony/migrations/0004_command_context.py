"""Commands queued before B24Command.context existed: their result handlers and send-time
hooks now find the call or connection through the context, so give the open ones theirs."""

import re

from django.db import migrations

# The lanes telephony used: "call:<pk>", "call:<pk>:crm", "users:<connection pk>".
LANES = {re.compile(r"^call:(\d+)(:crm)?$"): "call", re.compile(r"^users:(\d+)$"): "connection"}


def fill_context(apps, schema_editor):
    B24Command = apps.get_model("bitrixapp", "B24Command")
    open_commands = B24Command.objects.filter(state__in=("pending", "sending"), context={})
    for command in open_commands.exclude(owner_key="").iterator():
        for lane, key in LANES.items():
            match = lane.match(command.owner_key)
            if match:
                command.context = {key: int(match.group(1))}
                command.save(update_fields=["context"])
                break


class Migration(migrations.Migration):
    dependencies = [
        ("bitrixapp", "0003_inbox"),
        ("telephony", "0003_inbox"),
    ]

    operations = [migrations.RunPython(fill_context, migrations.RunPython.noop)]
