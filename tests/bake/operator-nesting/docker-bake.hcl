O=5%{
dG=5%n5%ninud5%{
dG=5%niduuuunuu1u5%{
5%n5%ninud5%{
dG=5%niduuuunuu1u5%{
dG=5%ninud1uuuuu<uuuuuuuu%{dG=5%nni5%nud5%{
dG=5%niduuuunuu1u5%{

inu+d5%{
ddG=5%n5%ninud5%{
dG=5%niduuuunuu1u5%{
dG=5%ninud1uuuuu<uuuuuuuu%{dG=5%nni5%nud5%{
dG=5%niduuuunuu1u5%{

inu+d5%{
ddG=5%ninud1uuuuu<uuuuuuuu%{dG=5%nni5%nud5%{
dG=5%niduuuunuu1u5%{

inu+d55%ninud1uuuuu<uuuuuuuu%{dG=5%nni5%nud5%{
dG=5%niduuuunuu1u5%{

inu+d5%{
d%Gn1nuuuuuu5%{
dG=5%ninud1uuuuuuuuuuuuuu%{
d4J