from django.db import models


class AuditEvent(models.Model):
    order = models.ForeignKey(
        "orders.Order", on_delete=models.CASCADE, related_name="audit_events"
    )
    action = models.CharField(max_length=64)
    # GIN index "audit_auditevent_payload_gin" exists only via migration 0002
    # (RunPython + schema_editor.execute); it is not declared here.
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.action} on order {self.order_id}"
