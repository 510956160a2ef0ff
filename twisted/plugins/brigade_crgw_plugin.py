from twisted.application.service import ServiceMaker

brigade_crgw = ServiceMaker(
    "brigade-crgw",
    "brigade_crgw.tap",
    "Brigade container registry gateway: registry webhooks become Brigade builds",
    "brigade-crgw",
)
