"""PbxConnection.default_line_number: the Bitrix24 line of calls on numbers the connection's
line mappings do not list (MTT: several numbers, one default department)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("telephony", "0004_command_context")]

    operations = [
        migrations.AddField(
            model_name="pbxconnection",
            name="default_line_number",
            field=models.CharField(
                blank=True,
                help_text="Bitrix24 LINE_NUMBER for calls on numbers not in the lines below "
                "(empty: the number as the PBX reports it)",
                max_length=64,
            ),
        ),
    ]
