"""`make demo`: the app in embedded mode with live fakes of Bitrix24 and the PBX, a demo portal
installed through the real install flow, and scripted calls played through the real webhooks."""
