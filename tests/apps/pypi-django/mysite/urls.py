from django.contrib.auth.models import User
from django.http import HttpResponse
from django.templatetags.static import static
from django.urls import path


def home(request):
    # Reads a table `migrate` made, and a file `collectstatic` collected.
    return HttpResponse(f"{User.objects.count()} users; style at {static('site.css')}")


urlpatterns = [path("", home)]
